//! What a worker publishes: the extended resource on the Node, the NodeAddressPool status
//! (coalesced, but cool-down records at once since a restart depends on them), and the node's
//! metrics.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff;

use super::worker::{NodeWorker, Phase};
use crate::crd::{AddressCounts, CooldownRecord, Ec2ErrorRecord, NodeAddressPoolStatus};
use crate::ec2::{Ec2Backend, Ec2Error};
use crate::ipam::{Mode, Timestamp};
use crate::k8s::Cluster;
use crate::metrics::{Metrics, NodeIpCounts};

/// RFC 3339 form of a timestamp, as Kubernetes writes times.
pub(crate) fn rfc3339(ts: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(ts.as_millis() as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time (a cool-down record); `None` if it is not one.
pub(crate) fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let t: jiff::Timestamp = s.parse().ok()?;
    u64::try_from(t.as_millisecond()).ok().map(Timestamp)
}

#[derive(Default)]
pub(crate) struct StatusState {
    /// What was last written (conditions' transition times are kept from it).
    written: Option<NodeAddressPoolStatus>,
    written_at: Option<Timestamp>,
    /// The NodeAddressPool is not known to exist (never created by this worker, or a write
    /// found it gone): create it before the next status write.
    pub(crate) object_missing: bool,
    pub(crate) last_error: Option<(Ec2Error, Timestamp)>,
    /// When the status was last built and compared, and what would have made a write urgent
    /// then (see `write_status`).
    checked: Option<(Timestamp, UrgentInputs)>,
}

impl StatusState {
    /// Whether the last status written names `addr` as in use.
    pub(crate) fn records_used(&self, addr: std::net::Ipv4Addr) -> bool {
        let addr = addr.to_string();
        self.written
            .as_ref()
            .is_some_and(|s| s.used_addresses.contains(&addr))
    }
}

/// What makes a status write urgent: cool-down records and addresses in use.
type UrgentInputs = (
    Vec<(std::net::Ipv4Addr, Timestamp)>,
    Vec<std::net::Ipv4Addr>,
);

/// This node's share of cluster-wide gauges, so they stay right as nodes change or go.
#[derive(Default)]
pub(crate) struct NodeGauges {
    state: Option<&'static str>,
    waiting: i64,
    duplicates: i64,
    has_series: bool,
    /// The per-node series as last set (capacity, counts, prefixes): unchanged values are not
    /// set again (a label lookup each, on every pass).
    last: Option<(u32, crate::ipam::PoolCounts, u32)>,
}

impl NodeGauges {
    fn set(&mut self, metrics: &Metrics, state: &'static str, waiting: i64, duplicates: i64) {
        if self.state != Some(state) {
            if let Some(old) = self.state {
                metrics.nodes.with_label_values(&[old]).dec();
            }
            metrics.nodes.with_label_values(&[state]).inc();
            self.state = Some(state);
        }
        metrics.pods_waiting_for_ip.add(waiting - self.waiting);
        self.waiting = waiting;
        metrics
            .duplicate_ip_annotations
            .add(duplicates - self.duplicates);
        self.duplicates = duplicates;
    }

    pub(crate) fn clear(&mut self, metrics: &Metrics) {
        if let Some(old) = self.state.take() {
            metrics.nodes.with_label_values(&[old]).dec();
        }
        metrics.pods_waiting_for_ip.sub(self.waiting);
        metrics.duplicate_ip_annotations.sub(self.duplicates);
        self.waiting = 0;
        self.duplicates = 0;
        self.last = None;
    }
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, now: Timestamp) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: Time(
            jiff::Timestamp::from_millisecond(now.as_millis() as i64).unwrap_or_default(),
        ),
        observed_generation: None,
    }
}

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    /// One reconcile pass of a ready node. Returns when to run again by itself.
    pub(crate) async fn reconcile(&mut self) -> Option<Timestamp> {
        let now = self.ctx.now();
        match &mut self.phase {
            Phase::Ready(ready) => ready.pool.advance(now),
            _ => return None,
        }
        self.flush_lost().await;
        self.adopt_annotated(now).await;
        let waiting = if self.blocked {
            self.count_needing_address()
        } else {
            self.assign_and_annotate(now).await
        };
        let now = self.ctx.now();
        if let Phase::Ready(ready) = &mut self.phase {
            ready.pool.set_waiting(waiting);
            ready.pool.advance(now);
        }
        self.start_ec2_op(now);
        self.write_capacity().await;
        let status_due = self.write_status(now).await;
        let pending_due = self.report_pending(now).await;
        let pool_due = match &self.phase {
            Phase::Ready(ready) => ready.pool.next_wakeup(now),
            _ => None,
        };
        [status_due, pending_due, pool_due]
            .into_iter()
            .flatten()
            .min()
    }

    fn count_needing_address(&self) -> u32 {
        self.pods
            .values()
            .filter(|e| super::pods::needs_address(&e.view))
            .count() as u32
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

    fn build_status(&self, now: Timestamp) -> NodeAddressPoolStatus {
        let mut status = NodeAddressPoolStatus::default();
        let previous: BTreeMap<String, Condition> = self
            .status
            .written
            .iter()
            .flat_map(|s| s.conditions.iter())
            .map(|c| (c.type_.clone(), c.clone()))
            .collect();
        let mut conditions = Vec::new();
        match &self.phase {
            Phase::Ready(ready) => {
                let pool = &ready.pool;
                let counts = pool.counts(now);
                status.instance_id = Some(ready.instance.instance_id.clone());
                status.instance_type = Some(ready.instance.instance_type.clone());
                status.eni_id = Some(ready.instance.primary_eni.eni_id.clone());
                status.subnet_id = Some(ready.subnet.subnet_id.clone());
                status.subnet_cidr = Some(ready.subnet.cidr.to_string());
                status.mode = Some(pool.mode().to_string());
                status.capacity = Some(pool.capacity(now));
                status.counts = AddressCounts {
                    used: counts.used,
                    free: counts.free,
                    cooling: counts.cooling,
                    pending: counts.pending,
                };
                status.prefixes = pool.prefixes().iter().map(|p| p.to_string()).collect();
                status.used_addresses = pool
                    .used_addresses()
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                status.cooldowns = pool
                    .cooldowns(now)
                    .into_iter()
                    .map(|(addr, until)| CooldownRecord {
                        address: addr.to_string(),
                        until: rfc3339(until),
                    })
                    .collect();
                let subnet_held = self.ctx.subnet_hold(&ready.subnet.subnet_id, now).is_some();
                conditions.push(condition(
                    "Ready",
                    !self.blocked && !subnet_held,
                    if self.blocked {
                        "Blocked"
                    } else if subnet_held {
                        "SubnetExhausted"
                    } else {
                        "PoolReady"
                    },
                    format!("{} mode, capacity {}", pool.mode(), pool.capacity(now)),
                    now,
                ));
                conditions.push(condition(
                    "SubnetExhausted",
                    subnet_held,
                    if subnet_held {
                        "InsufficientFreeAddressesInSubnet"
                    } else {
                        "AddressesAvailable"
                    },
                    format!("subnet {}", ready.subnet.subnet_id),
                    now,
                ));
                conditions.push(condition(
                    "Unsupported",
                    false,
                    "Supported",
                    String::new(),
                    now,
                ));
            }
            Phase::Parked { .. } | Phase::Init { .. } => {
                // Not rebuilt yet: the previous leader's records stay in the status. Without
                // them a process that dies before its rebuild ends erases them, and the next
                // leader hands out addresses whose pods went meanwhile before their cool-down
                // ends.
                status.used_addresses = self.restored.used.iter().map(|a| a.to_string()).collect();
                status.cooldowns = self
                    .restored
                    .cooldowns
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(addr, until)| CooldownRecord {
                        address: addr.to_string(),
                        until: rfc3339(*until),
                    })
                    .collect();
                let parked = matches!(self.phase, Phase::Parked { .. });
                conditions.push(condition(
                    "Ready",
                    false,
                    if parked {
                        "Unsupported"
                    } else {
                        "Initializing"
                    },
                    "see the node's Events".to_string(),
                    now,
                ));
                conditions.push(condition(
                    "Unsupported",
                    parked,
                    if parked {
                        "NotManageable"
                    } else {
                        "Initializing"
                    },
                    "see the node's Events".to_string(),
                    now,
                ));
            }
        }
        conditions.push(condition(
            "Blocked",
            self.blocked,
            if self.blocked {
                "ForeignIPAMEnabled"
            } else {
                "NotBlocked"
            },
            if self.blocked {
                "kube-system/amazon-vpc-cni has enable-windows-ipam: \"true\"".to_string()
            } else {
                String::new()
            },
            now,
        ));
        // A condition keeps its transition time while its status does not change.
        for c in &mut conditions {
            if let Some(old) = previous.get(&c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
        }
        status.conditions = conditions;
        status.last_ec2_error = self
            .status
            .last_error
            .as_ref()
            .map(|(e, at)| Ec2ErrorRecord {
                operation: e.class.label().to_string(),
                code: e
                    .code
                    .clone()
                    .unwrap_or_else(|| e.class.label().to_string()),
                message: e.message.clone(),
                time: rfc3339(*at),
            });
        status
    }

    /// Writes the status when it changed: at once if the cool-down records changed or an address
    /// came into use (a restart relies on both), else at most every `status_min_interval`.
    /// Returns when a deferred write is due. The first write of a worker creates the
    /// NodeAddressPool if needed (nodes that cannot be managed get one too, saying why).
    pub(crate) async fn write_status(&mut self, now: Timestamp) -> Option<Timestamp> {
        // Building the status is most of a reconcile pass: it is built again only when what is
        // written at once (cool-down records, addresses in use) changed, or the interval passed.
        let urgent_inputs = match &self.phase {
            Phase::Ready(ready) => (ready.pool.cooldowns(now), ready.pool.used_addresses()),
            _ => (Vec::new(), Vec::new()),
        };
        if let Some((at, seen)) = &self.status.checked {
            let due = at.plus(self.ctx.settings.status_min_interval);
            if *seen == urgent_inputs && due > now && !self.status.object_missing {
                return Some(due);
            }
        }
        self.status.checked = Some((now, urgent_inputs));
        let status = self.build_status(now);
        let (changed, urgent) = match &self.status.written {
            None => (true, true),
            Some(old) => (
                old != &status,
                old.cooldowns != status.cooldowns
                    || status
                        .used_addresses
                        .iter()
                        .any(|a| !old.used_addresses.contains(a)),
            ),
        };
        if !changed {
            return None;
        }
        let due = self
            .status
            .written_at
            .map(|at| at.plus(self.ctx.settings.status_min_interval))
            .unwrap_or(now);
        if !urgent && due > now {
            return Some(due);
        }
        if self.status.object_missing || self.status.written.is_none() {
            match self
                .ctx
                .cluster
                .ensure_pool_object(&self.node.name, &self.node.uid)
                .await
            {
                Ok(_) => self.status.object_missing = false,
                Err(err) => {
                    tracing::warn!(node = %self.node.name, error = %err, "could not create the NodeAddressPool");
                    return Some(now.plus(self.ctx.settings.status_min_interval));
                }
            }
        }
        match self
            .ctx
            .cluster
            .write_pool_status(&self.node.name, &status)
            .await
        {
            Ok(()) => {
                self.status.written = Some(status);
                self.status.written_at = Some(now);
                None
            }
            Err(err) => {
                tracing::warn!(node = %self.node.name, error = %err, "writing NodeAddressPool status failed");
                if matches!(err, crate::k8s::ClusterError::NotFound(_)) {
                    self.status.object_missing = true;
                }
                Some(now.plus(self.ctx.settings.status_min_interval))
            }
        }
    }

    /// Per-node series and this node's share of the cluster-wide gauges.
    pub(crate) fn update_gauges(&mut self) {
        let now = self.ctx.now();
        let metrics = self.ctx.metrics.clone();
        let name = self.node.name.clone();
        let (state, waiting, duplicates) = match &self.phase {
            Phase::Ready(ready) => {
                let pool = &ready.pool;
                let c = pool.counts(now);
                let capacity = pool.capacity(now);
                let prefixes = if pool.mode() == Mode::Prefix {
                    pool.prefixes.len() as u32
                } else {
                    0
                };
                let values = (capacity, c, prefixes);
                if self.gauges.last != Some(values) || !self.gauges.has_series {
                    metrics.set_node_capacity(&name, capacity);
                    metrics.set_node_ips(
                        &name,
                        NodeIpCounts {
                            used: c.used,
                            free: c.free,
                            cooling: c.cooling,
                            pending: c.pending,
                        },
                    );
                    metrics.set_node_prefixes(&name, prefixes);
                    self.gauges.last = Some(values);
                }
                self.gauges.has_series = true;
                let state = if self.blocked { "blocked" } else { "managed" };
                (
                    state,
                    self.count_needing_address() as i64,
                    pool.duplicates().len() as i64,
                )
            }
            Phase::Parked { state } => (*state, self.count_needing_address() as i64, 0),
            Phase::Init { .. } => ("managed", self.count_needing_address() as i64, 0),
        };
        self.gauges.set(&metrics, state, waiting, duplicates);
    }
}

impl NodeGauges {
    pub(crate) fn had_series(&self) -> bool {
        self.has_series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let ts = Timestamp(1_795_000_000_123);
        let s = rfc3339(ts);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(ts));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
