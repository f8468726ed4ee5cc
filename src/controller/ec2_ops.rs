//! Running the pool's plan through EC2 and feeding the outcome back (SPEC 5.2, 7). The call runs
//! in its own task so the worker keeps serving pods from free addresses meanwhile; at most one
//! call per node is in flight (the pool refuses to plan another).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::need::needs_address;
use super::reasons;
use super::record::rules::{self, is_release};
use super::state::{Ec2Done, NodeWorker, Phase};
use crate::ec2::{Ec2Backend, Ec2Error, Urgency};
use crate::ipam::{
    Action, Ec2Addresses, Ec2ErrorClass, FailureEffect, InstanceInfo, LostAddress, Timestamp,
};
use crate::k8s::{Cluster, EventSeverity, ObjectRef};

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    /// Asks the pool for its next call and starts it, unless one is running or winipam is
    /// paused (blocked: nothing is assigned or released).
    pub(crate) fn start_ec2_op(&mut self, now: Timestamp) {
        if self.ec2_task.is_some() {
            return;
        }
        let Phase::Ready(ready) = &mut self.phase else {
            return;
        };
        if let Some(until) = self.ctx.subnet_hold(&ready.subnet.subnet_id, now) {
            ready.pool.hold_assigns_until(until);
        }
        let action = match ready.pool.in_flight() {
            // A release begun on an earlier pass, waiting for a status that lists it.
            Some((action, _)) if is_release(action) => {
                if self.blocked {
                    ready.pool.abandon_release();
                    return;
                }
                action.clone()
            }
            Some(_) => return,
            None => {
                let action = ready.pool.plan(now);
                if action == Action::None || (self.blocked && action != Action::Describe) {
                    return;
                }
                ready.pool.begin(&action, now);
                action
            }
        };
        // Slots go back to EC2 only once a written status lists them: if this process dies
        // with the call applied, the next leader's first describe may still show them, and
        // only the status tells it they are not free. Meanwhile they are neither handed out
        // nor planned again (the release is the pool's call in flight).
        if !rules::may_call(self.status.published.as_ref(), &action) {
            return;
        }
        tracing::debug!(node = %self.node.name, ?action, "EC2 call");
        let ec2 = self.ctx.ec2.clone();
        let eni = ready.instance.primary_eni.eni_id.clone();
        let instance_id = ready.instance.instance_id.clone();
        // Known addresses, so only what EC2 added counts (some answers list every address).
        let mut known_ips: Vec<Ipv4Addr> = ready.pool.secondary_ips();
        known_ips.push(ready.instance.primary_eni.primary_ip);
        let known_prefixes: Vec<Ipv4Net> = ready.pool.prefixes();
        let urgency = Urgency::default();
        self.ec2_urgency = urgency.clone();
        self.ec2_task = Some(tokio::spawn(async move {
            match action {
                Action::AssignIps(n) => Ec2Done::Assigned(
                    ec2.assign_ips(&eni, &known_ips, n, &urgency)
                        .await
                        .map(Ec2Addresses::Ips),
                ),
                Action::AssignPrefixes(n) => Ec2Done::Assigned(
                    ec2.assign_prefixes(&eni, &known_prefixes, n, &urgency)
                        .await
                        .map(Ec2Addresses::Prefixes),
                ),
                Action::ReleaseIps(ips) => Ec2Done::Released(ec2.unassign_ips(&eni, &ips).await),
                Action::ReleasePrefixes(prefixes) => {
                    Ec2Done::Released(ec2.unassign_prefixes(&eni, &prefixes).await)
                }
                Action::Describe | Action::None => {
                    Ec2Done::Described(ec2.describe_instance(&instance_id).await)
                }
            }
        }));
    }

    pub(crate) async fn apply_ec2(&mut self, done: Ec2Done) {
        let now = self.ctx.now();
        let Phase::Ready(ready) = &mut self.phase else {
            return;
        };
        let (assigning, result) = match done {
            Ec2Done::Assigned(Ok(added)) => {
                ready.pool.apply_assign_ok(&added, now);
                return;
            }
            Ec2Done::Released(Ok(())) => {
                ready.pool.apply_release_ok(now);
                return;
            }
            Ec2Done::Described(Ok(info)) => {
                let outcome = ready.pool.apply_describe(&info.primary_eni, now);
                ready.instance = info;
                self.report_lost(outcome.lost).await;
                return;
            }
            Ec2Done::Assigned(Err(e)) => (true, e),
            Ec2Done::Released(Err(e)) | Ec2Done::Described(Err(e)) => (false, e),
        };
        let effect = ready.pool.apply_failure(&result.class, now);
        let subnet = ready.subnet.subnet_id.clone();
        self.status.last_error = Some((result.clone(), now));
        if assigning {
            self.ctx
                .metrics
                .allocation_failures_total
                .with_label_values(&[result.class.label()])
                .inc();
        }
        if let FailureEffect::NoAssignUntil { until } = effect {
            self.ctx.hold_subnet(&subnet, until);
        }
        self.report_failure(&result, effect, assigning).await;
    }

    /// Events for a failed call: on the node, and on the pods waiting when an assign failed.
    async fn report_failure(&mut self, err: &Ec2Error, effect: FailureEffect, assigning: bool) {
        let node_ref = ObjectRef::node(&self.node);
        let code = err.code.as_deref().unwrap_or("none");
        let (reason, note) = match (&err.class, effect) {
            (Ec2ErrorClass::Throttled, _) | (Ec2ErrorClass::UnknownOutcome, _) => {
                tracing::info!(node = %self.node.name, error = %err, ?effect, "EC2 call to be retried");
                return;
            }
            (Ec2ErrorClass::EniLimit, _) => {
                tracing::info!(node = %self.node.name, "ENI limit reached; re-describing the ENI");
                return;
            }
            (Ec2ErrorClass::SubnetFull, _) => (
                reasons::SUBNET_EXHAUSTED,
                format!(
                    "subnet {} has no free addresses (EC2 {code}): pods on this node wait; \
                     winipam retries in 2 minutes. Free addresses in the subnet or add nodes in \
                     another subnet",
                    self.subnet_id()
                ),
            ),
            (Ec2ErrorClass::NoCidrBlock, FailureEffect::FallbackToSecondaryUntil { .. }) => (
                reasons::INSUFFICIENT_CIDR_BLOCKS,
                format!(
                    "subnet {} has no free aligned /28 (EC2 {code}): handing out secondary IPs \
                     for 2 minutes (prefix-fallback-to-secondary)",
                    self.subnet_id()
                ),
            ),
            (Ec2ErrorClass::NoCidrBlock, _) => (
                reasons::INSUFFICIENT_CIDR_BLOCKS,
                format!(
                    "subnet {} has no free aligned /28 (EC2 {code}): no new prefix for 2 minutes; \
                     use a less fragmented subnet, a subnet CIDR reservation for prefixes, or set \
                     prefix-fallback-to-secondary: \"true\"",
                    self.subnet_id()
                ),
            ),
            (Ec2ErrorClass::NotFound, _) => {
                let note = "EC2 no longer knows this node's instance or ENI: waiting for the \
                            node to be deleted";
                self.ctx
                    .event(
                        &node_ref,
                        EventSeverity::Warning,
                        reasons::INSTANCE_NOT_FOUND,
                        note,
                    )
                    .await;
                self.phase = Phase::Parked {
                    state: "unsupported",
                };
                return;
            }
            (Ec2ErrorClass::Other { code, message }, _) => (
                reasons::EC2_ERROR,
                format!(
                    "EC2 answered {code}: {message}; winipam retries with backoff. Check the \
                     IAM policy and EC2 quotas if this repeats"
                ),
            ),
        };
        self.ctx
            .event(&node_ref, EventSeverity::Warning, reason, &note)
            .await;
        if assigning {
            let waiting: Vec<ObjectRef> = self
                .pods
                .values()
                .filter(|e| needs_address(&e.view))
                .map(|e| ObjectRef::pod(&e.view))
                .collect();
            for pod in waiting {
                self.ctx
                    .event(
                        &pod,
                        EventSeverity::Warning,
                        reasons::IP_ALLOCATION_FAILED,
                        &note,
                    )
                    .await;
            }
        }
    }

    fn subnet_id(&self) -> String {
        match &self.phase {
            Phase::Ready(ready) => ready.subnet.subnet_id.clone(),
            _ => String::new(),
        }
    }

    /// The periodic describe: EC2 is the truth (addresses removed by hand leave, new ones join).
    pub(crate) fn apply_resync(&mut self, info: InstanceInfo, now: Timestamp) {
        let Phase::Ready(ready) = &mut self.phase else {
            return;
        };
        let outcome = ready.pool.apply_describe(&info.primary_eni, now);
        ready.instance = info;
        if !outcome.lost.is_empty() {
            self.pending_lost.extend(outcome.lost);
        }
    }

    async fn report_lost(&mut self, lost: Vec<LostAddress>) {
        for l in lost {
            for uid in l.uids {
                let Some(entry) = self.pods.get(&uid) else {
                    continue;
                };
                let note = format!(
                    "address {} was removed from the node's ENI outside winipam: this pod's \
                     network no longer works; delete the pod so it gets a new address",
                    l.addr
                );
                let object = ObjectRef::pod(&entry.view);
                self.ctx
                    .event(
                        &object,
                        EventSeverity::Warning,
                        reasons::IP_REMOVED_FROM_ENI,
                        &note,
                    )
                    .await;
            }
        }
    }

    /// Lost addresses found by a resync (which runs in `handle`, not async) are reported here.
    pub(crate) async fn flush_lost(&mut self) {
        let lost = std::mem::take(&mut self.pending_lost);
        if !lost.is_empty() {
            self.report_lost(lost).await;
        }
    }
}
