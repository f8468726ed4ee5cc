//! Leader election: only the leader writes (EC2, annotations, capacity, pool status); every
//! replica watches and serves webhooks.
//!
//! The controller hands an elector a `watch::Sender<bool>` and reads the receiver: `true` while
//! it may act as the leader, `false` as soon as it may not. A replica that wins the lease must
//! rebuild its pools before writing (SPEC 6.3).

mod lease;
mod watchdog;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::shutdown::Shutdown;

pub use lease::{LeaseElector, lease_client_config, unique_identity};
pub use watchdog::Watchdog;

/// Timings of the election, with client-go's meaning and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// A lease is valid this long after its last renewal; others may take it after that.
    pub lease_duration: Duration,
    /// The leader stops acting when its last successful renewal is this old. Less than
    /// `lease_duration`: a deposed leader stops writing before anyone else may start.
    pub renew_deadline: Duration,
    /// Interval between renewals (and between acquisition attempts after an error).
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A way to decide which replica leads.
pub trait LeaderElector: Send + 'static {
    /// Campaigns until `shutdown` fires: sends `true` on `leader` while this replica may act as
    /// the leader and `false` as soon as it may not, and gives up the leadership (if held) before
    /// returning. `false` is sent first thing on shutdown, before anything slow.
    fn run(
        self,
        leader: watch::Sender<bool>,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send;
}

/// Leads from start to shutdown without asking anyone: one replica, or the simulator.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysLeader;

impl LeaderElector for AlwaysLeader {
    async fn run(self, leader: watch::Sender<bool>, shutdown: Shutdown) {
        leader.send_replace(true);
        shutdown.cancelled().await;
        leader.send_replace(false);
    }
}

/// retry < renew deadline < lease duration, all non-zero and in whole seconds where the Lease
/// object needs them (`leaseDurationSeconds`).
pub fn check_lease_timings(
    lease: Duration,
    renew: Duration,
    retry: Duration,
) -> Result<(), String> {
    if retry.is_zero() {
        return Err("--retry-period must be more than 0".into());
    }
    if retry >= renew {
        return Err(format!(
            "--retry-period ({retry:?}) must be less than --renew-deadline ({renew:?})"
        ));
    }
    if renew >= lease {
        return Err(format!(
            "--renew-deadline ({renew:?}) must be less than --lease-duration ({lease:?}), so a \
             deposed leader stops before another replica may take over"
        ));
    }
    if lease < Duration::from_secs(2) {
        return Err(format!("--lease-duration ({lease:?}) must be at least 2s"));
    }
    // Lease objects hold `leaseDurationSeconds` as an int32: a longer one fails every write.
    if lease > MAX_LEASE_DURATION {
        return Err(format!(
            "--lease-duration ({lease:?}) must be at most {}s (Lease objects hold int32 seconds)",
            MAX_LEASE_DURATION.as_secs()
        ));
    }
    if lease.subsec_nanos() != 0 {
        return Err(format!(
            "--lease-duration ({lease:?}) must be whole seconds (Lease objects count in seconds)"
        ));
    }
    Ok(())
}

/// The longest `--lease-duration`: `leaseDurationSeconds` is an int32.
const MAX_LEASE_DURATION: Duration = Duration::from_secs(i32::MAX as u64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::shutdown_channel;

    #[tokio::test]
    async fn always_leader_leads_until_shutdown() {
        let (tx, mut rx) = watch::channel(false);
        let (trigger, shutdown) = shutdown_channel();
        let task = tokio::spawn(AlwaysLeader.run(tx, shutdown));
        rx.wait_for(|l| *l).await.unwrap();
        trigger.trigger();
        task.await.unwrap();
        assert!(!*rx.borrow());
    }
}
