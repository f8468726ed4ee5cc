//! One `coordination.k8s.io` Lease shared by simulated replicas, on tokio (virtual) time, and an
//! elector per replica with client-go's semantics (like [`crate::leader::LeaseElector`] with its
//! watchdog):
//! - every `retry_period` a replica tries to acquire or renew the lease;
//! - it acquires only when the lease is free or the holder's last renewal is older than
//!   `lease_duration`;
//! - it leads from a successful acquisition until its last successful renewal is older than
//!   `renew_deadline`, which is less than `lease_duration`: a deposed leader stops acting before
//!   anyone else may take the lease;
//! - on shutdown it stops leading first, then releases the lease (others take it at their next
//!   try).
//!
//! Lease requests take no time here; a replica [`partition`](SimLease::partition)ed off has every
//! lease request fail, as if it could not reach the apiserver.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::leader::{LeaderElector, LeaseTimings};
use crate::shutdown::Shutdown;

/// The Lease object and the test hooks around it.
struct Record {
    holder: Option<String>,
    /// The holder's last successful acquisition or renewal (`renewTime`).
    renewed_at: Instant,
    partitioned: BTreeSet<String>,
    transitions: Vec<(Duration, Option<String>)>,
}

struct Shared {
    timings: LeaseTimings,
    start: Instant,
    record: Mutex<Record>,
}

/// A lease request that did not reach the apiserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unreachable;

/// One Lease shared by simulated replicas. Cheap to clone; clones share the lease.
#[derive(Clone)]
pub struct SimLease {
    shared: Arc<Shared>,
}

impl SimLease {
    /// A free lease; transitions are timed from now (tokio time). `timings` should satisfy
    /// client-go's rule `lease_duration > renew_deadline > retry_period` (see
    /// `check_lease_timings`); otherwise two replicas may lead at once, as with client-go.
    pub fn new(timings: LeaseTimings) -> SimLease {
        let now = Instant::now();
        SimLease {
            shared: Arc::new(Shared {
                timings,
                start: now,
                record: Mutex::new(Record {
                    holder: None,
                    renewed_at: now,
                    partitioned: BTreeSet::new(),
                    transitions: Vec::new(),
                }),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.shared.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An elector for the replica `identity` (unique among replicas).
    pub fn elector(&self, identity: &str) -> SimLeaseElector {
        SimLeaseElector {
            lease: self.clone(),
            identity: identity.to_string(),
        }
    }

    /// The holder the Lease names (it may have expired: nobody has taken it over yet).
    pub fn holder(&self) -> Option<String> {
        self.lock().holder.clone()
    }

    /// `cut_off = true`: that replica's lease requests fail from now on (it keeps running,
    /// stops leading at its renew deadline, and another replica takes over after the lease
    /// duration); `false` heals it.
    pub fn partition(&self, identity: &str, cut_off: bool) {
        let mut r = self.lock();
        if cut_off {
            r.partitioned.insert(identity.to_string());
        } else {
            r.partitioned.remove(identity);
        }
    }

    /// Changes of holder so far: (time since the lease was made, new holder; `None`: released).
    pub fn transitions(&self) -> Vec<(Duration, Option<String>)> {
        self.lock().transitions.clone()
    }

    /// client-go's tryAcquireOrRenew: `Ok(true)` if `identity` holds the lease now (renewed or
    /// newly acquired), `Ok(false)` if another holds a valid lease.
    fn try_acquire_or_renew(&self, identity: &str) -> Result<bool, Unreachable> {
        let now = Instant::now();
        let lease_duration = self.shared.timings.lease_duration;
        let mut r = self.lock();
        if r.partitioned.contains(identity) {
            return Err(Unreachable);
        }
        match r.holder.as_deref() {
            Some(h) if h == identity => {}
            Some(_) if now < r.renewed_at + lease_duration => return Ok(false),
            _ => {
                r.holder = Some(identity.to_string());
                let at = now - self.shared.start;
                r.transitions.push((at, Some(identity.to_string())));
            }
        }
        r.renewed_at = now;
        Ok(true)
    }

    /// Gives the lease up if `identity` holds it.
    fn release(&self, identity: &str) -> Result<(), Unreachable> {
        let now = Instant::now();
        let mut r = self.lock();
        if r.partitioned.contains(identity) {
            return Err(Unreachable);
        }
        if r.holder.as_deref() == Some(identity) {
            r.holder = None;
            r.renewed_at = now;
            let at = now - self.shared.start;
            r.transitions.push((at, None));
        }
        Ok(())
    }
}

/// One replica's elector on a [`SimLease`].
pub struct SimLeaseElector {
    lease: SimLease,
    identity: String,
}

impl SimLeaseElector {
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// Sends only changes.
fn publish(leader: &watch::Sender<bool>, leading: bool) {
    leader.send_if_modified(|current| {
        let changed = *current != leading;
        *current = leading;
        changed
    });
}

impl LeaderElector for SimLeaseElector {
    async fn run(self, leader: watch::Sender<bool>, shutdown: Shutdown) {
        let timings = self.lease.shared.timings;
        // Our last successful renewal while we hold the lease: we lead until it is
        // `renew_deadline` old.
        let mut renewed: Option<Instant> = None;
        let mut tick = tokio::time::interval(timings.retry_period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let deadline = renewed.map(|t| t + timings.renew_deadline);
            let expired = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = expired => {
                    tracing::debug!(identity = %self.identity, "lease not renewed within the renew deadline; stepping down");
                    renewed = None;
                }
                _ = tick.tick() => match self.lease.try_acquire_or_renew(&self.identity) {
                    Ok(true) => renewed = Some(Instant::now()),
                    Ok(false) => renewed = None,
                    // The bound is not extended; the deadline ends the leadership.
                    Err(Unreachable) => {}
                },
            }
            publish(&leader, renewed.is_some());
        }
        publish(&leader, false);
        // Only acts if the lease still names us (also after stepping down: others need not
        // wait for it to expire).
        if self.lease.release(&self.identity).is_err() {
            tracing::debug!(identity = %self.identity, "releasing the lease failed; it will expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::{ShutdownTrigger, shutdown_channel};
    use crate::sim::rng::SplitMix64;
    use tokio::task::JoinHandle;

    const SEC: Duration = Duration::from_secs(1);

    /// One running replica and the record of what its elector said, with virtual timestamps.
    struct Replica {
        trigger: ShutdownTrigger,
        task: JoinHandle<()>,
        said: Arc<Mutex<Vec<(Duration, bool)>>>,
    }

    impl Replica {
        fn start(lease: &SimLease, identity: &str, t0: Instant) -> Replica {
            let (tx, mut rx) = watch::channel(false);
            let (trigger, shutdown) = shutdown_channel();
            let task = tokio::spawn(lease.elector(identity).run(tx, shutdown));
            let said = Arc::new(Mutex::new(Vec::new()));
            let log = said.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let leading = *rx.borrow_and_update();
                    log.lock().unwrap().push((t0.elapsed(), leading));
                }
            });
            Replica {
                trigger,
                task,
                said,
            }
        }

        fn said(&self) -> Vec<(Duration, bool)> {
            self.said.lock().unwrap().clone()
        }

        fn leading(&self) -> bool {
            self.said().last().is_some_and(|(_, l)| *l)
        }

        /// [start, end) of each period it led; an open one ends at `now`.
        fn periods(&self, now: Duration) -> Vec<(Duration, Duration)> {
            let mut out = Vec::new();
            let mut since = None;
            for (t, leading) in self.said() {
                match (leading, since) {
                    (true, None) => since = Some(t),
                    (false, Some(s)) => {
                        out.push((s, t));
                        since = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = since {
                out.push((s, now));
            }
            out
        }
    }

    fn lease() -> (SimLease, Instant) {
        (SimLease::new(LeaseTimings::default()), Instant::now())
    }

    /// At 5.5 s: `a` has led since 0 s (its tries: 0, 2, 4 s), `b` follows since 1 s (its tries:
    /// 1, 3, 5 s).
    async fn a_leads_b_follows() -> (SimLease, Replica, Replica) {
        let (lease, t0) = lease();
        let a = Replica::start(&lease, "a", t0);
        sleep(SEC).await;
        let b = Replica::start(&lease, "b", t0);
        sleep(Duration::from_millis(4_500)).await;
        assert!(a.leading() && b.said().is_empty());
        (lease, a, b)
    }

    fn id(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    async fn sleep(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_replica_leads_and_keeps_the_lease() {
        let (lease, t0) = lease();
        let a = Replica::start(&lease, "a", t0);
        sleep(60 * SEC).await;
        assert_eq!(a.said(), [(Duration::ZERO, true)]);
        assert_eq!(lease.holder(), id("a"));
        assert_eq!(lease.transitions(), [(Duration::ZERO, id("a"))]);
    }

    #[tokio::test(start_paused = true)]
    async fn of_two_replicas_only_the_first_leads() {
        let (lease, t0) = lease();
        let a = Replica::start(&lease, "a", t0);
        sleep(SEC).await;
        let b = Replica::start(&lease, "b", t0);
        sleep(120 * SEC).await;
        assert!(a.leading());
        assert!(b.said().is_empty(), "{:?}", b.said());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partitioned_leader_steps_down_at_its_renew_deadline_before_the_other_takes_over() {
        let (lease, a, b) = a_leads_b_follows().await;
        lease.partition("a", true);
        sleep(60 * SEC).await;
        // renew deadline 10 s after 4 s; b may take it 15 s after 4 s (its tries: 1, 3, ... s).
        assert_eq!(a.said(), [(Duration::ZERO, true), (14 * SEC, false)]);
        assert_eq!(b.said(), [(19 * SEC, true)]);
        assert_eq!(
            lease.transitions(),
            [(Duration::ZERO, id("a")), (19 * SEC, id("b"))]
        );
        // Healed, a finds the lease taken and stays a follower.
        lease.partition("a", false);
        sleep(60 * SEC).await;
        assert_eq!(a.said().len(), 2);
        assert!(b.leading());
        assert_eq!(lease.holder(), id("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_leader_is_replaced_after_the_lease_duration() {
        let (lease, a, b) = a_leads_b_follows().await;
        a.task.abort();
        sleep(60 * SEC).await;
        // Killed: it said nothing more and released nothing.
        assert_eq!(a.said(), [(Duration::ZERO, true)]);
        assert_eq!(b.said(), [(19 * SEC, true)]);
        assert_eq!(lease.holder(), id("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shut_down_leader_stops_then_releases_and_the_other_leads_within_a_retry_period() {
        let (lease, a, b) = a_leads_b_follows().await;
        a.trigger.trigger();
        sleep(SEC).await;
        assert!(a.task.is_finished());
        assert_eq!(
            a.said(),
            [
                (Duration::ZERO, true),
                (Duration::from_millis(5_500), false)
            ]
        );
        sleep(60 * SEC).await;
        // b tries at 7 s: within one retry period of the release at 5.5 s.
        assert_eq!(b.said(), [(7 * SEC, true)]);
        assert_eq!(
            lease.transitions(),
            [
                (Duration::ZERO, id("a")),
                (Duration::from_millis(5_500), None),
                (7 * SEC, id("b")),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_shutting_down_changes_nothing() {
        let (lease, t0) = lease();
        let a = Replica::start(&lease, "a", t0);
        sleep(SEC).await;
        let b = Replica::start(&lease, "b", t0);
        sleep(SEC).await;
        b.trigger.trigger();
        sleep(30 * SEC).await;
        assert!(b.task.is_finished());
        assert!(a.leading());
        assert_eq!(lease.transitions().len(), 1);
    }

    /// Three replicas under random partitions and heals: leadership moves, and no two periods
    /// of leading (as the electors said it) ever overlap.
    #[tokio::test(start_paused = true)]
    async fn leading_periods_never_overlap_under_random_partitions() {
        let (lease, t0) = lease();
        let names = ["a", "b", "c"];
        let replicas: Vec<Replica> = names
            .iter()
            .map(|n| Replica::start(&lease, n, t0))
            .collect();
        let mut rng = SplitMix64::new(9);
        for _ in 0..400 {
            let who = names[rng.below(3) as usize];
            lease.partition(who, rng.chance(0.5));
            sleep(Duration::from_millis(500 + rng.below(4_000))).await;
        }
        let now = t0.elapsed();
        let mut all: Vec<(Duration, Duration, usize)> = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            all.extend(r.periods(now).into_iter().map(|(s, e)| (s, e, i)));
        }
        all.sort();
        assert!(all.len() >= 10, "leadership moved only {} times", all.len());
        let leaders: BTreeSet<usize> = all.iter().map(|p| p.2).collect();
        assert_eq!(leaders.len(), 3);
        for w in all.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap: {:?} and {:?}", w[0], w[1]);
        }
        // And each new leader starts at least a lease duration after the last renewal the
        // lease saw from the old one: here, strictly after the old one stopped.
        for w in all.windows(2) {
            if w[0].2 != w[1].2 {
                assert!(w[0].1 < w[1].0, "{:?} then {:?}", w[0], w[1]);
            }
        }
    }
}
