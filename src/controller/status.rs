//! What a worker publishes: the extended resource on the Node, the NodeAddressPool status
//! (coalesced, but at once when an address comes into use, since its annotation waits for a
//! status that lists it, or a cool-down record is new: a restart depends on both), and the
//! node's metrics.

use k8s_openapi::jiff;

use super::published::{KeptRecords, PoolFacts, Published, Stage, render, restore_conditions};
use super::worker::{NodeWorker, Phase};
use crate::crd::NodeAddressPoolStatus;
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
    /// What the last successful write said (`None`: nothing written by this worker yet).
    published: Option<Published>,
    /// The status last written: its texts are reused for what did not change, and its
    /// conditions' transition times are kept while they hold.
    written: Option<NodeAddressPoolStatus>,
    written_at: Option<Timestamp>,
    /// The NodeAddressPool is not known to exist (never created by this worker, or a write
    /// found it gone): create it before the next status write.
    pub(crate) object_missing: bool,
    pub(crate) last_error: Option<(Ec2Error, Timestamp)>,
    /// Writes failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<Timestamp>,
}

impl StatusState {
    /// The written status lists every slot of the release `action`: its call may go out.
    pub(crate) fn lists_release(&self, action: &crate::ipam::Action) -> bool {
        self.published
            .as_ref()
            .and_then(|p| p.pool.as_ref())
            .is_some_and(|facts| facts.lists_release(action))
    }

    /// The written status lists `addr` as used: its annotation may be written (SPEC 5.3).
    pub(crate) fn lists_used(&self, addr: std::net::Ipv4Addr) -> bool {
        self.published
            .as_ref()
            .and_then(|p| p.pool.as_ref())
            .is_some_and(|facts| facts.lists(addr))
    }
}

/// First retry of a failed status write; doubles up to `status_min_interval`. Short, because
/// annotations wait for it.
const STATUS_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

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

    /// What the status would say now, in typed form (cheap to compare, see `write_status`).
    fn published_now(&self, now: Timestamp) -> Published {
        let (stage, pool) = match &self.phase {
            Phase::Ready(ready) => (Stage::Ready, Some(PoolFacts::of(ready, now))),
            Phase::Parked { .. } => (Stage::Parked, None),
            Phase::Init { .. } => (Stage::Init, None),
        };
        Published {
            stage,
            blocked: self.blocked,
            subnet_held: self.subnet_held(now),
            error_at: self.status.last_error.as_ref().map(|(_, at)| *at),
            kept: pool.is_none().then(|| self.kept_records(now)),
            pool,
        }
    }

    /// The previous leader's records while this worker has no pool of its own (see
    /// `Published::kept`): cool-downs that ended are dropped.
    fn kept_records(&self, now: Timestamp) -> KeptRecords {
        let mut used = self.restored.used.clone();
        used.sort_unstable();
        used.dedup();
        let mut cooldowns: Vec<_> = (self.restored.cooldowns.iter())
            .filter(|(_, until)| *until > now)
            .copied()
            .collect();
        cooldowns.sort_unstable();
        let mut releasing = self.restored.releasing.clone();
        releasing.sort_unstable();
        releasing.dedup();
        KeptRecords {
            used,
            cooldowns,
            releasing,
        }
    }

    /// The written status lists `addr` as used, and for the pod that holds it now (it did not
    /// change hands since): that pod's annotation may be written (SPEC 5.3, 6.3).
    pub(crate) fn status_lists_holder(&self, addr: std::net::Ipv4Addr) -> bool {
        self.status.lists_used(addr)
            && matches!(&self.phase, Phase::Ready(ready) if ready.pool.same_holder_since_published(addr))
    }

    /// `self.published_now(now) == *published`, without building it.
    fn still_published(&self, published: &Published, now: Timestamp) -> bool {
        let stage_and_pool = match (&self.phase, &published.pool) {
            (Phase::Ready(ready), Some(facts)) => {
                published.stage == Stage::Ready
                    && facts.same_as(ready, now)
                    && !ready.pool.changed_hands_since_published()
            }
            (Phase::Parked { .. }, None) => {
                published.stage == Stage::Parked
                    && published.kept.as_ref() == Some(&self.kept_records(now))
            }
            (Phase::Init { .. }, None) => {
                published.stage == Stage::Init
                    && published.kept.as_ref() == Some(&self.kept_records(now))
            }
            _ => false,
        };
        stage_and_pool
            && published.blocked == self.blocked
            && published.error_at == self.status.last_error.as_ref().map(|(_, at)| *at)
            && published.subnet_held == self.subnet_held(now)
    }

    fn subnet_held(&self, now: Timestamp) -> bool {
        match &self.phase {
            Phase::Ready(ready) => self.ctx.subnet_hold(&ready.subnet.subnet_id, now).is_some(),
            _ => false,
        }
    }

    /// Writes the status when it changed: at once if a pod holds an address it does not list
    /// as used (the annotation waits for that write, see `assign_and_annotate`) or a cool-down
    /// record is missing from it (SPEC 5.3), else (counts, expired records, conditions) at
    /// most every `status_min_interval`. Returns when a deferred write or a retry is due. The
    /// first write of a worker creates the NodeAddressPool if needed (nodes that cannot be
    /// managed get one too, saying why).
    pub(crate) async fn write_status(&mut self, now: Timestamp) -> Option<Timestamp> {
        // A worker of a deposed leader (a pass still running or an EC2 call finishing when the
        // lead went) writes nothing: its records are stale and the next leader may already
        // have written newer ones, which it would overwrite. Seen with an unbuilt pool's
        // records replacing the new leader's: an address in use went missing from the status,
        // its pod went, and the address was handed out inside its cool-down. Annotations wait
        // too (they need a status that lists their address).
        if !self.ctx.readiness.leader() || self.retired.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        // The common case, several times per pass: nothing the status shows has changed. It
        // is decided on the typed record, without building (formatting) a status.
        if !self.status.object_missing
            && let Some(published) = &self.status.published
            && self.still_published(published, now)
        {
            return None;
        }
        if let Some(at) = self.status.retry_at.filter(|at| *at > now) {
            return Some(at);
        }
        let urgent = self.status.object_missing
            || match (&self.status.published, &self.phase) {
                (None, _) => true,
                (Some(published), Phase::Ready(ready)) => {
                    !published.pool.as_ref().is_some_and(|facts| {
                        facts.lists_all_used(&ready.pool)
                            && facts.lists_all_cooling(&ready.pool, now)
                            && facts.lists_all_releasing(&ready.pool, now)
                    }) || ready.pool.changed_hands_since_published()
                }
                (Some(_), _) => false,
            };
        let interval = self.ctx.settings.status_min_interval;
        if !urgent
            && let Some(due) = self.status.written_at.map(|at| at.plus(interval))
            && due > now
        {
            return Some(due);
        }
        if self.status.object_missing || self.status.published.is_none() {
            match self
                .ctx
                .cluster
                .ensure_pool_object(&self.node.name, &self.node.uid)
                .await
            {
                Ok(_) => self.status.object_missing = false,
                Err(err) => {
                    tracing::warn!(node = %self.node.name, error = %err, "could not create the NodeAddressPool");
                    return Some(self.status_failed(now));
                }
            }
        }
        let published = self.published_now(now);
        let previous = (self.status.published.as_ref()).zip(self.status.written.as_mut());
        let status = render(&published, previous, self.status.last_error.as_ref(), now);
        match self
            .ctx
            .cluster
            .write_pool_status(&self.node.name, &status)
            .await
        {
            Ok(()) => {
                if let Phase::Ready(ready) = &mut self.phase {
                    ready.pool.mark_published();
                }
                self.status.published = Some(published);
                self.status.written = Some(status);
                self.status.written_at = Some(now);
                self.status.failures = 0;
                self.status.retry_at = None;
                None
            }
            Err(err) => {
                let written = (self.status.published.as_ref()).zip(self.status.written.as_mut());
                if let Some(written) = written {
                    restore_conditions(written, &published, status);
                }
                tracing::warn!(node = %self.node.name, error = %err, "writing NodeAddressPool status failed");
                if matches!(err, crate::k8s::ClusterError::NotFound(_)) {
                    self.status.object_missing = true;
                }
                Some(self.status_failed(now))
            }
        }
    }

    /// Schedules the retry of a failed write: 1 s, doubling, at most `status_min_interval`.
    fn status_failed(&mut self, now: Timestamp) -> Timestamp {
        let delay = STATUS_RETRY
            .saturating_mul(1 << self.status.failures.min(6))
            .min(self.ctx.settings.status_min_interval.max(STATUS_RETRY));
        self.status.failures = self.status.failures.saturating_add(1);
        let at = now.plus(delay);
        self.status.retry_at = Some(at);
        at
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
                    pool.prefixes_iter().count() as u32
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
                    pool.duplicate_count() as i64,
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
