//! Writing a node's NodeAddressPool status: when (coalesced, but at once when it misses what
//! a restart needs, see `record::rules`), creating the object first if needed, and retrying a
//! failed write. What the status says, and how it is made, is `record`'s.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::reasons;
use super::record::{PoolFacts, Published, Stage, ahead, render, restore_conditions, rules};
use super::state::{NodeWorker, Phase, StatusState};
use crate::ec2::Ec2Backend;
use crate::ipam::{NodePool, Timestamp};
use crate::k8s::{Cluster, ClusterError, EventSeverity, ObjectRef};

/// First retry of a failed status write; doubles up to [`STATUS_RETRY_MAX`]. Short, because
/// annotations wait for it.
const STATUS_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between retries of a failed status write (or `status_min_interval`, if
/// shorter): pods wait for it, however long the coalescing interval.
const STATUS_RETRY_MAX: Duration = Duration::from_secs(10);

/// While writes keep failing, the `StatusWriteFailed` Event is repeated this often (an Event
/// lives an hour in the apiserver; a missing CRD or RBAC rule lasts until someone acts).
const REPORT_EVERY: Duration = Duration::from_secs(600);

/// Whether a failed write gets a `StatusWriteFailed` Event: from the second failure in a row
/// (a single one is often a NodeAddressPool deleted under us, created again by the retry a
/// second later), then every [`REPORT_EVERY`] while the failures last; never one per retry.
fn report_due(failures_in_a_row: u32, reported_at: Option<Timestamp>, now: Timestamp) -> bool {
    failures_in_a_row >= 2 && reported_at.is_none_or(|at| now >= at.plus(REPORT_EVERY))
}

/// The Event's note: what failed, what waits for it, and what to check.
fn failure_note(err: &ClusterError) -> String {
    let check = match err {
        ClusterError::NotFound(_) => {
            "Check that the CRD nodeaddresspools.winipam.dev is installed (kubectl apply \
             --server-side -f crds/nodeaddresspool.yaml)"
        }
        ClusterError::Forbidden(_) => {
            "RBAC denies it: winipam's ClusterRole must grant get, create and patch on \
             nodeaddresspools and patch on nodeaddresspools/status (winipam.dev)"
        }
        _ => {
            "Check that the CRD nodeaddresspools.winipam.dev is installed and up to date, and \
             that winipam's ClusterRole grants patch on nodeaddresspools/status"
        }
    };
    format!(
        "writing this node's NodeAddressPool failed ({err}): pods on this node get no address \
         annotation until it succeeds (retried with backoff). {check}"
    )
}

impl StatusState {
    /// `n` addresses were handed out at `now`; the counts roll over every `interval`.
    pub(crate) fn note_assigned(&mut self, n: u32, now: Timestamp, interval: Duration) {
        let (start, current, before) = &mut self.assigned;
        match *start {
            Some(at) if now < at.plus(interval) => {}
            Some(at) if now < at.plus(interval.saturating_mul(2)) => {
                *before = *current;
                *current = 0;
                *start = Some(at.plus(interval));
            }
            _ => {
                *before = 0;
                *current = 0;
                *start = Some(now);
            }
        }
        *current = current.saturating_add(n);
    }

    /// How many addresses to list ahead (`ahead::ahead_size`), from the recent pod rate.
    pub(crate) fn ahead_size(&self, now: Timestamp, interval: Duration) -> usize {
        let (start, current, before) = self.assigned;
        let recent = match start {
            Some(at) if now < at.plus(interval) => current.max(before),
            Some(at) if now < at.plus(interval.saturating_mul(2)) => current,
            _ => 0,
        };
        ahead::ahead_size(recent)
    }

    fn written_facts(&self) -> Option<&PoolFacts> {
        self.published.as_ref().and_then(|p| p.pool.as_ref())
    }
}

impl<C: Cluster, B: Ec2Backend> NodeWorker<C, B> {
    /// How many addresses the status lists ahead.
    fn ahead_size(&self, now: Timestamp) -> usize {
        (self.status).ahead_size(now, self.ctx.settings.status_min_interval)
    }

    /// The addresses the next status lists ahead (`ahead::ahead`, after `written`); none once
    /// the leader steps down, as nothing more is handed out.
    fn ahead_now(
        &self,
        written: Option<&PoolFacts>,
        pool: &NodePool,
        now: Timestamp,
    ) -> Vec<Ipv4Addr> {
        if self.status.stepping_down {
            return Vec::new();
        }
        ahead::ahead(written, pool, self.ahead_size(now), now)
    }

    /// What the status would say now, in typed form (cheap to compare, see `write_status`).
    fn published_now(&self, now: Timestamp) -> Published {
        let (stage, pool) = match &self.phase {
            Phase::Ready(ready) => (
                Stage::Ready,
                Some(PoolFacts::of(
                    &ready.pool,
                    &ready.instance,
                    &ready.subnet,
                    self.ahead_now(self.status.written_facts(), &ready.pool, now),
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
                let ahead = self.ahead_now(Some(facts), &ready.pool, now);
                published.stage == Stage::Ready
                    && facts.same_as(&ready.pool, &ready.instance, &ready.subnet, &ahead, now)
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

    /// Writes the status when it changed: at once if it misses what a restart needs or the
    /// addresses listed ahead run low (see `rules::at_once`: annotations and releases
    /// wait for that write), else (pods gone, counts, expired records, addresses to list ahead,
    /// conditions) at most every `status_min_interval` (`--status-interval`, 30 s by default),
    /// so a node taking a pod a second writes one status per thirty pods, and a new leader's
    /// view of the cool-downs is never older than that (the records it misses are covered by
    /// the addresses listed as used; a leader stepping down writes them all). A new leader's
    /// first write waits for the interval too while nothing needs it (`rules::first_may_wait`).
    /// Returns when a deferred write or a retry is due. The first write of a worker creates the
    /// NodeAddressPool if needed (nodes that cannot be managed get one too, saying why).
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
        // Stepping down, the last status goes out now or never (no pass follows).
        if let Some(at) = self.status.retry_at.filter(|at| *at > now)
            && !self.status.stepping_down
        {
            return Some(at);
        }
        let pool = match &self.phase {
            Phase::Ready(ready) => Some(&ready.pool),
            _ => None,
        };
        let at_once = rules::at_once(
            self.status.published.as_ref(),
            pool,
            now,
            self.blocked,
            self.ahead_size(now),
        );
        // Why this write goes now, for `winipam_status_writes_total`; `None`: it can wait.
        let why = if self.status.object_missing {
            Some(rules::AtOnce::First.label())
        } else if self.status.stepping_down {
            Some("step_down")
        } else if let Some(at_once) = at_once {
            Some(at_once.label())
        } else if rules::pausing(self.status.published.as_ref(), self.blocked) {
            Some("pause")
        } else {
            None
        };
        if let Some(due) = self.status.first_due.filter(|due| *due > now)
            && at_once == Some(rules::AtOnce::First)
            && self.status.published.is_none()
            && !self.status.object_missing
            && !self.status.stepping_down
            && rules::first_may_wait(self.status.object_read, pool, self.blocked)
        {
            return Some(due);
        }
        let interval = self.ctx.settings.status_min_interval;
        if why.is_none()
            && let Some(due) = self.status.written_at.map(|at| at.plus(interval))
            && due > now
        {
            return Some(due);
        }
        if self.status.object_missing
            || (self.status.published.is_none() && !self.status.object_read)
        {
            match self
                .ctx
                .cluster
                .ensure_pool_object(&self.node.name, &self.node.uid)
                .await
            {
                Ok(_) => self.status.object_missing = false,
                Err(err) => {
                    tracing::warn!(node = %self.node.name, error = %err, "could not create the NodeAddressPool");
                    return Some(self.status_failed(&err, now).await);
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
                (self.ctx.metrics.status_writes_total)
                    .with_label_values(&[why.unwrap_or("coalesced")])
                    .inc();
                if let Phase::Ready(ready) = &mut self.phase {
                    ready.pool.mark_published();
                }
                self.status.published = Some(published);
                self.status.written = Some(status);
                self.status.written_at = Some(now);
                self.status.failures = 0;
                self.status.retry_at = None;
                self.status.reported_at = None;
                None
            }
            Err(err) => {
                let written = (self.status.published.as_ref()).zip(self.status.written.as_mut());
                if let Some(written) = written {
                    restore_conditions(written, &published, status);
                }
                if let Some(acknowledged) = self.status.published.as_mut() {
                    rules::after_failed_write(acknowledged, &published);
                }
                tracing::warn!(node = %self.node.name, error = %err, "writing NodeAddressPool status failed");
                if matches!(err, ClusterError::NotFound(_)) {
                    self.status.object_missing = true;
                }
                Some(self.status_failed(&err, now).await)
            }
        }
    }

    /// Counts a failed write, reports it (see [`report_due`]) and schedules the retry: 1 s,
    /// doubling, at most [`STATUS_RETRY_MAX`] (or `status_min_interval`, if shorter).
    async fn status_failed(&mut self, err: &ClusterError, now: Timestamp) -> Timestamp {
        self.ctx
            .metrics
            .status_write_failures_total
            .with_label_values(&[err.metric_label()])
            .inc();
        let delay = STATUS_RETRY
            .saturating_mul(1 << self.status.failures.min(6))
            .min(
                STATUS_RETRY_MAX
                    .min(self.ctx.settings.status_min_interval)
                    .max(STATUS_RETRY),
            );
        self.status.failures = self.status.failures.saturating_add(1);
        let at = now.plus(delay);
        self.status.retry_at = Some(at);
        if report_due(self.status.failures, self.status.reported_at, now) {
            self.status.reported_at = Some(now);
            self.ctx
                .event(
                    &ObjectRef::node(&self.node),
                    EventSeverity::Warning,
                    reasons::STATUS_WRITE_FAILED,
                    &failure_note(err),
                )
                .await;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_streak_is_reported_from_its_second_failure_then_every_ten_minutes() {
        let at = |s: u64| Timestamp(s * 1000);
        // (failures in a row, last report, now, reported)
        let cases: [(u32, Option<Timestamp>, Timestamp, bool); 7] = [
            (0, None, at(0), false),
            // One failure: the retry a second later usually mends it.
            (1, None, at(0), false),
            (2, None, at(1), true),
            // Reported: the retries that follow are not.
            (3, Some(at(1)), at(3), false),
            (40, Some(at(1)), at(600), false),
            (41, Some(at(1)), at(601), true),
            // A long streak first reported late (a failure count carried on).
            (200, None, at(5000), true),
        ];
        for (failures, reported_at, now, want) in cases {
            assert_eq!(
                report_due(failures, reported_at, now),
                want,
                "{failures} failures, reported {reported_at:?}, now {now:?}"
            );
        }
    }

    #[test]
    fn the_note_says_what_to_check() {
        let missing = failure_note(&ClusterError::NotFound("the server could not find".into()));
        assert!(
            missing.contains("CRD nodeaddresspools.winipam.dev is installed"),
            "{missing}"
        );
        let denied = failure_note(&ClusterError::Forbidden("cannot patch".into()));
        assert!(denied.contains("nodeaddresspools/status"), "{denied}");
        assert!(
            denied.contains("cannot patch"),
            "the apiserver's words: {denied}"
        );
        let other = failure_note(&ClusterError::Rejected {
            code: 422,
            reason: "Invalid".into(),
            message: "status.x: Invalid value".into(),
        });
        assert!(other.contains("Invalid value"), "{other}");
        for note in [missing, denied, other] {
            assert!(note.contains("no address annotation"), "{note}");
        }
    }
}
