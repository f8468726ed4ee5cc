//! Writing a node's NodeAddressPool status: when (coalesced, but at once when it misses what
//! a restart needs, see `record::rules`), creating the object first if needed, and retrying a
//! failed write. What the status says, and how it is made, is `record`'s.

use super::record::{PoolFacts, Published, Stage, render, restore_conditions, rules};
use super::state::{NodeWorker, Phase};
use crate::ec2::Ec2Backend;
use crate::ipam::Timestamp;
use crate::k8s::Cluster;

/// First retry of a failed status write; doubles up to `status_min_interval`. Short, because
/// annotations wait for it.
const STATUS_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    /// What the status would say now, in typed form (cheap to compare, see `write_status`).
    fn published_now(&self, now: Timestamp) -> Published {
        let (stage, pool) = match &self.phase {
            Phase::Ready(ready) => (
                Stage::Ready,
                Some(PoolFacts::of(
                    &ready.pool,
                    &ready.instance,
                    &ready.subnet,
                    now,
                )),
            ),
            Phase::Parked { .. } => (Stage::Parked, None),
            Phase::Init { .. } => (Stage::Init, None),
        };
        Published {
            stage,
            blocked: self.blocked,
            subnet_held: self.subnet_held(now),
            error_at: self.status.last_error.as_ref().map(|(_, at)| *at),
            kept: pool.is_none().then(|| self.restored.kept(now)),
            pool,
        }
    }

    /// `self.published_now(now) == *published`, without building it.
    fn still_published(&self, published: &Published, now: Timestamp) -> bool {
        let stage_and_pool = match (&self.phase, &published.pool) {
            (Phase::Ready(ready), Some(facts)) => {
                published.stage == Stage::Ready
                    && facts.same_as(&ready.pool, &ready.instance, &ready.subnet, now)
                    && !ready.pool.changed_hands_since_published()
            }
            (Phase::Parked { .. }, None) => {
                published.stage == Stage::Parked
                    && published.kept.as_ref() == Some(&self.restored.kept(now))
            }
            (Phase::Init { .. }, None) => {
                published.stage == Stage::Init
                    && published.kept.as_ref() == Some(&self.restored.kept(now))
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

    /// Writes the status when it changed: at once if it misses what a restart needs (see
    /// `rules::write_at_once`: annotations and releases wait for that write), else (counts,
    /// expired records, conditions) at most every `status_min_interval`. Returns when a deferred write or a retry is due. The
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
        let pool = match &self.phase {
            Phase::Ready(ready) => Some(&ready.pool),
            _ => None,
        };
        let urgent = self.status.object_missing
            || rules::write_at_once(self.status.published.as_ref(), pool, now);
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
}
