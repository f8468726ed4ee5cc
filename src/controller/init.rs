//! Bringing a node under management (SPEC 6.1, 6.3): describe its instance (batched with every
//! other node starting at the same time), learn its type's limits and its subnet, rebuild the
//! pool from the ENI and the previous leader's records, all before the first write (the pass
//! then adopts the pods' existing annotations, see `pass`).

use std::time::Duration;

use super::need::needs_address;
use super::reasons;
use super::record::restore;
use super::state::{NodeWorker, Phase, ReadyNode};
use crate::ec2::Ec2Backend;
use crate::ipam::{Ec2ErrorClass, NodePool, Timestamp, capacity};
use crate::k8s::{Cluster, EventSeverity, ObjectRef};

/// Longest wait between two tries of a node whose describe keeps failing.
const INIT_RETRY_MAX: Duration = Duration::from_secs(300);

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    /// Describes the node and builds its pool. Returns when the pool was built (the pass then
    /// adopts the pods' annotations and cools down what no pod holds, as of that time); `None`
    /// if the node is parked or waits for a retry.
    pub(crate) async fn init(&mut self) -> Option<Timestamp> {
        // A node managed again (its `winipam.dev/managed: "false"` label removed) still has
        // the records its last worker wrote: addresses in use and cool-downs. Without them an
        // address whose pod went while the node was left alone would be handed out at once,
        // inside its cool-down (issue 16). A new node has none: one read of nothing.
        if self.record_unread {
            match self.ctx.cluster.read_pool_status(&self.node.name).await {
                Ok(status) => {
                    self.restored = status.as_ref().map(restore).unwrap_or_default();
                    self.record_unread = false;
                }
                Err(err) => {
                    tracing::warn!(node = %self.node.name, error = %err,
                        "reading the node's NodeAddressPool failed; will retry");
                    self.retry_init();
                    return None;
                }
            }
        }
        let node_ref = ObjectRef::node(&self.node);
        let Some(instance_id) = self.node.instance_id.clone() else {
            self.ctx
                .event(
                    &node_ref,
                    EventSeverity::Warning,
                    reasons::MISSING_PROVIDER_ID,
                    "spec.providerID has no EC2 instance id (expected aws:///<zone>/i-...): \
                     winipam does not manage this node's pod IPs; check how the node registered",
                )
                .await;
            self.phase = Phase::Parked {
                state: "unsupported",
            };
            return None;
        };

        // A node whose pods wait for an address is described before the others asked with it:
        // a new leader rebuilding 1,000 nodes annotates those pods after a describe of their
        // nodes, not of the whole fleet (#18, R3).
        let waiting = self.pods.values().any(|e| needs_address(&e.view));
        let described = if waiting {
            self.ctx.ec2.describe_instance_first(&instance_id).await
        } else {
            self.ctx.ec2.describe_instance(&instance_id).await
        };
        let instance = match described {
            Ok(instance) => instance,
            Err(err) if err.class == Ec2ErrorClass::NotFound => {
                self.ctx
                    .event(
                        &node_ref,
                        EventSeverity::Warning,
                        reasons::INSTANCE_NOT_FOUND,
                        &format!(
                            "EC2 does not know instance {instance_id}: if the instance was \
                             terminated the node will be deleted; otherwise check winipam's region \
                             and account"
                        ),
                    )
                    .await;
                self.retry_init();
                return None;
            }
            Err(err) => {
                tracing::warn!(node = %self.node.name, error = %err, "describing the instance failed; will retry");
                self.retry_init();
                return None;
            }
        };

        let ec2_limits = match self
            .ctx
            .ec2
            .instance_type_limits(&instance.instance_type)
            .await
        {
            Ok(limits) => limits,
            Err(err) => {
                tracing::warn!(instance_type = %instance.instance_type, error = %err,
                    "DescribeInstanceTypes failed; using the embedded table");
                None
            }
        };
        let Some(resolved) = capacity::resolve(ec2_limits, &instance.instance_type) else {
            let note = format!(
                "instance type {} is unknown to EC2's DescribeInstanceTypes and to winipam's \
                 table: no pod IP capacity is advertised and no pod on this node gets an address; \
                 upgrade winipam or check its IAM permissions for ec2:DescribeInstanceTypes",
                instance.instance_type
            );
            self.ctx
                .event(
                    &node_ref,
                    EventSeverity::Warning,
                    reasons::UNSUPPORTED_INSTANCE_TYPE,
                    &note,
                )
                .await;
            if self.node.advertised_capacity.is_some()
                && let Err(err) = self
                    .ctx
                    .cluster
                    .set_node_capacity(&self.node.name, None)
                    .await
            {
                tracing::warn!(node = %self.node.name, error = %err, "could not remove capacity");
            }
            self.phase = Phase::Parked {
                state: "unsupported",
            };
            return None;
        };

        let subnet = match self.ctx.ec2.subnet(&instance.primary_eni.subnet_id).await {
            Ok(subnet) => subnet,
            Err(err) => {
                tracing::warn!(node = %self.node.name, error = %err, "describing the subnet failed; will retry");
                self.retry_init();
                return None;
            }
        };

        let now = self.ctx.now();
        let mut pool = NodePool::new(
            resolved.limits,
            (*self.config).clone(),
            &instance.primary_eni,
        );
        for (addr, until) in std::mem::take(&mut self.restored.cooldowns) {
            pool.restore_cooldown(addr, until);
        }
        // The previous leader's releases may have landed after the describe above was served.
        let releasing = std::mem::take(&mut self.restored.releasing);
        let held_back = pool.restore_releasing(&releasing, now);
        if held_back > 0 {
            tracing::info!(node = %self.node.name, held_back,
                "slots the previous leader was releasing stay out of the pool until a later describe");
        }
        if pool.mode_downgraded() {
            let note = format!(
                "prefix delegation is enabled but {} is not a Nitro instance: this node uses \
                 secondary IPs (capacity {}); use a Nitro type to get /28 prefixes",
                instance.instance_type,
                pool.capacity(now)
            );
            self.ctx
                .event(
                    &node_ref,
                    EventSeverity::Warning,
                    reasons::PREFIX_DELEGATION_UNSUPPORTED,
                    &note,
                )
                .await;
        }
        tracing::info!(
            node = %self.node.name,
            instance = %instance.instance_id,
            instance_type = %instance.instance_type,
            eni = %instance.primary_eni.eni_id,
            mode = %pool.mode(),
            capacity = pool.capacity(now),
            limits_from = ?resolved.source,
            "node managed"
        );
        self.phase = Phase::Ready(Box::new(ReadyNode {
            pool,
            instance,
            subnet,
        }));
        Some(now)
    }

    /// What the previous leader listed as used or ahead and no pod holds (annotations
    /// adopted) cools down from `now`: its pod went while no controller ran, at a time nobody
    /// knows, or (ahead) it may have been annotated on a pod our cache does not show yet.
    pub(crate) fn cool_restored_used(&mut self, now: Timestamp) {
        let mut used = std::mem::take(&mut self.restored.used);
        used.append(&mut self.restored.ahead);
        if let Phase::Ready(ready) = &mut self.phase {
            let cooled = ready.pool.cool_released_while_away(&used, now);
            if cooled > 0 {
                tracing::info!(node = %self.node.name, cooled,
                    "addresses whose pods went away while no controller ran cool down from now");
            }
        }
    }

    fn retry_init(&mut self) {
        let failures = match self.phase {
            Phase::Init { failures, .. } => failures + 1,
            _ => 1,
        };
        let base = self.ctx.settings.init_retry;
        let delay = base
            .saturating_mul(1 << failures.min(5))
            .min(INIT_RETRY_MAX.max(base));
        self.phase = Phase::Init {
            retry_at: self.ctx.now().plus(delay),
            failures,
        };
    }
}
