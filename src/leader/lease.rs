//! Leader election on a `coordination.k8s.io/v1` Lease, with kube-lease-manager doing the
//! acquiring and renewing.
//!
//! How the client-go timings map onto the crate, which has only a lease `duration` and a `grace`
//! (the holder renews `grace` seconds before the lease would expire):
//! - `duration` = lease duration (written as `leaseDurationSeconds`);
//! - `grace` = lease duration - retry period, so the holder renews every retry period like
//!   client-go does;
//! - the renew deadline is enforced here by a [`Watchdog`] on the Lease's `renewTime`, because
//!   the crate keeps saying "leader" while its renewals fail.
//!
//! A candidate that does not hold the lease sleeps until the current lease expires, then tries
//! (the crate's behaviour); after an error the election restarts after the retry period.

use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

use super::watchdog::Watchdog;
use super::{LeaderElector, LeaseTimings};
use crate::shutdown::Shutdown;

/// Elects one leader among the replicas sharing a Lease.
#[derive(Clone)]
pub struct LeaseElector {
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    timings: LeaseTimings,
}

impl LeaseElector {
    /// `identity` must be unique among replicas and incarnations (see [`unique_identity`]).
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timings: LeaseTimings,
    ) -> Result<Self, String> {
        super::check_lease_timings(
            timings.lease_duration,
            timings.renew_deadline,
            timings.retry_period,
        )?;
        Ok(LeaseElector {
            client,
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            timings,
        })
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    async fn manager(&self) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
        let (duration, grace) = crate_params(&self.timings);
        LeaseManagerBuilder::new(self.client.clone(), self.name.clone())
            .with_namespace(self.namespace.clone())
            .with_identity(self.identity.clone())
            .with_duration(duration)
            .with_grace(grace)
            .build()
            .await
    }

    /// Reads the Lease and feeds the watchdog; a failed read changes nothing (the bound simply
    /// is not extended).
    async fn probe(&self, api: &Api<Lease>, dog: &mut Watchdog) {
        match tokio::time::timeout(self.timings.retry_period, api.get(&self.name)).await {
            Ok(Ok(lease)) => {
                let spec = lease.spec.unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let renewed = spec.renew_time.map(|t| SystemTime::from(t.0));
                dog.observe(ours, renewed);
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "reading the lease failed"),
            Err(_) => tracing::debug!("reading the lease timed out"),
        }
    }

    /// One election with one lease manager, until shutdown (`true`) or a failure of the
    /// manager's task (`false`: start over).
    async fn campaign(
        &self,
        manager: LeaseManager,
        leader: &watch::Sender<bool>,
        shutdown: &Shutdown,
    ) -> bool {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let (mut says, task) = manager.watch().await;
        let mut dog = Watchdog::new(self.timings.renew_deadline);
        let mut tick = tokio::time::interval(self.timings.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let expiry = dog.valid_until();
            let deadline = async move {
                match expiry.map(|t| t.duration_since(SystemTime::now()).unwrap_or_default()) {
                    Some(left) => tokio::time::sleep(left).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    publish(leader, false);
                    // Closing the channel makes the manager's task release the lease and end.
                    drop(says);
                    match tokio::time::timeout(self.timings.renew_deadline, task).await {
                        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
                        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "releasing the lease failed"),
                        Ok(Err(err)) => tracing::warn!(error = %err, "lease task failed"),
                        Err(_) => tracing::warn!("releasing the lease timed out"),
                    }
                    return true;
                }
                changed = says.changed() => {
                    if changed.is_err() {
                        tracing::warn!("lease manager stopped; restarting the election");
                        publish(leader, false);
                        return false;
                    }
                    if *says.borrow_and_update() {
                        self.probe(&api, &mut dog).await;
                    } else {
                        dog.lost();
                    }
                }
                _ = tick.tick() => {
                    if *says.borrow() {
                        self.probe(&api, &mut dog).await;
                    }
                }
                _ = deadline => {
                    tracing::warn!("lease not renewed within the renew deadline; stepping down");
                }
            }
            publish(leader, *says.borrow() && dog.is_valid(SystemTime::now()));
        }
    }
}

/// The Kubernetes client settings for the election's own client: every request bounded by
/// half the renew deadline (at least a second). kube-lease-manager sets no deadline of its
/// own, and kube's default is no read timeout at all: in the chart test, after the leader's
/// container was killed, both followers sent their GET of the Lease at its expiry and neither
/// got an answer or an error for the 31 s the test waited, so no replica led. A request that
/// times out is an error the crate retries on a new connection after its backoff (client-go
/// likewise bounds each try by the renew deadline).
pub fn lease_client_config(config: kube::Config, timings: &LeaseTimings) -> kube::Config {
    let bound = (timings.renew_deadline / 2).max(std::time::Duration::from_secs(1));
    crate::k8s::bounded(config, bound)
}

/// The crate's `(duration, grace)` in seconds: see the module documentation.
fn crate_params(timings: &LeaseTimings) -> (u64, u64) {
    let duration = timings.lease_duration.as_secs();
    let grace = timings
        .lease_duration
        .saturating_sub(timings.retry_period)
        .as_secs()
        .clamp(1, duration.saturating_sub(1).max(1));
    (duration, grace)
}

/// Sends only changes, and logs them.
fn publish(leader: &watch::Sender<bool>, leading: bool) {
    let changed = leader.send_if_modified(|current| {
        let changed = *current != leading;
        *current = leading;
        changed
    });
    if changed {
        if leading {
            tracing::info!("became the leader");
        } else {
            tracing::info!("stopped leading");
        }
    }
}

impl LeaderElector for LeaseElector {
    async fn run(self, leader: watch::Sender<bool>, shutdown: Shutdown) {
        tracing::info!(lease = %self.name, namespace = %self.namespace, identity = %self.identity, "joining the leader election");
        loop {
            let built = tokio::select! {
                _ = shutdown.cancelled() => break,
                built = self.manager() => built,
            };
            match built {
                Ok(manager) => {
                    if self.campaign(manager, &leader, &shutdown).await {
                        break;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot reach the lease; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.timings.retry_period) => {}
            }
        }
        publish(&leader, false);
    }
}

/// A lease identity unique to this process: the pod name (or host name) and the start time, so a
/// restarted container never mistakes its predecessor's lease for its own.
pub fn unique_identity(pod_name: Option<&str>) -> String {
    let base = pod_name.filter(|n| !n.is_empty()).unwrap_or("winipam");
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{base}_{:x}{:x}", nanos, std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn identities_differ_between_processes_and_restarts() {
        let a = unique_identity(Some("winipam-abc"));
        std::thread::sleep(Duration::from_millis(2));
        let b = unique_identity(Some("winipam-abc"));
        assert!(a.starts_with("winipam-abc_"));
        assert_ne!(a, b);
        assert!(unique_identity(None).starts_with("winipam_"));
    }

    #[test]
    fn every_request_of_the_election_is_bounded_by_half_the_renew_deadline() {
        let base = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        assert_eq!(base.read_timeout, None, "kube's default: no bound at all");
        let config = lease_client_config(base.clone(), &LeaseTimings::default());
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            (
                config.connect_timeout,
                config.read_timeout,
                config.write_timeout
            ),
            (five, five, five)
        );
        assert!(config.reset_reader_on_write, "counted from the request");
        let short = LeaseTimings {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_millis(200),
        };
        let config = lease_client_config(base, &short);
        assert_eq!(
            config.read_timeout,
            Some(Duration::from_secs(1)),
            "a second at least"
        );
    }

    #[test]
    fn crate_parameters_renew_every_retry_period() {
        assert_eq!(crate_params(&LeaseTimings::default()), (15, 13));
        let t = |l, r, p| LeaseTimings {
            lease_duration: Duration::from_secs(l),
            renew_deadline: Duration::from_secs(r),
            retry_period: Duration::from_millis(p),
        };
        assert_eq!(crate_params(&t(30, 20, 5000)), (30, 25));
        // Sub-second retry periods round the grace down (renewing a bit more often).
        assert_eq!(crate_params(&t(15, 10, 500)), (15, 14));
        // The crate panics unless 0 < grace < duration.
        assert_eq!(crate_params(&t(2, 1, 100)), (2, 1));
    }

    #[test]
    fn publish_sends_only_changes() {
        let (tx, mut rx) = watch::channel(false);
        publish(&tx, false);
        assert!(!rx.has_changed().unwrap());
        publish(&tx, true);
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update());
    }
}
