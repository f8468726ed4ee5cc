//! One simulated winipam process: the production controller on its own gated views of the
//! shared cluster and EC2 (see `gate`), with a fresh EC2 client, metrics and readiness. A crash
//! shuts its gate; a restart is a brand-new process.
//!
//! A process either leads from the start (the only replica) or campaigns on a shared
//! [`SimLease`] through its own elector, as `winipam run` does with the Lease elector.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::gate::{Gate, GatedCluster, GatedEc2, Tally};
use super::world::ChaosWorld;
use crate::controller::Settings;
use crate::leader::{LeaderElector, LeaseTimings};
use crate::server::Readiness;
use crate::shutdown::{ShutdownTrigger, shutdown_channel};
use crate::sim::lease::SimLease;
use crate::sim::scenario::policy::{WinipamProcess, spawn_controller};

/// The controller's loop settings in a chaos run: a short resync and init retry, so a few
/// simulated minutes see several of each.
pub fn settings() -> Settings {
    Settings {
        resync_period: std::time::Duration::from_secs(20),
        init_retry: std::time::Duration::from_secs(2),
        status_min_interval: std::time::Duration::from_secs(2),
        ..Settings::default()
    }
}

/// Lease timings of a two-replica run: short, so a run of a few minutes sees several
/// takeovers; client-go's rule (duration > deadline > retry) holds.
pub fn lease_timings() -> LeaseTimings {
    LeaseTimings {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_secs(1),
    }
}

/// Every change of every elector's verdict: (when, process, leading), in the order they
/// happened.
pub type LeaderLog = Arc<Mutex<Vec<(tokio::time::Instant, u32, bool)>>>;

/// How a process is led.
pub enum Leadership<'a> {
    /// Leads from the start (the only replica).
    Always,
    /// Campaigns on this lease; its verdicts go to the log.
    Lease(&'a SimLease, &'a LeaderLog),
}

pub struct Process {
    pub gate: Arc<Gate>,
    pub readiness: Readiness,
    /// The lease identity (a campaigning process).
    pub identity: Option<String>,
    /// What its elector says now (always true for the only replica).
    pub leading: watch::Receiver<bool>,
    /// Kept while the process exists: dropping it would ask the controller to stop (a clean
    /// shutdown, which a crash is not).
    _stop: oneshot::Sender<()>,
    /// The only replica's leader channel (a campaigning process's belongs to its elector).
    _leader: Option<watch::Sender<bool>>,
    /// Kept for the same reason: dropping it would stop the elector and release the lease.
    _election: Option<ShutdownTrigger>,
}

impl Process {
    /// Starts process `id`.
    pub fn start(
        id: u32,
        world: &ChaosWorld,
        tally: Arc<Tally>,
        leadership: Leadership<'_>,
    ) -> Process {
        let gate = Gate::new(id, tally, world.clock);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let readiness = Readiness::default();
        let (leader_tx, leader_rx) = watch::channel(matches!(leadership, Leadership::Always));
        let leading = leader_rx.clone();
        let (identity, leader, election) = match leadership {
            Leadership::Always => (None, Some(leader_tx), None),
            Leadership::Lease(lease, log) => {
                let identity = format!("winipam-{id}");
                let (trigger, shutdown) = shutdown_channel();
                tokio::spawn(lease.elector(&identity).run(leader_tx, shutdown));
                tokio::spawn(record(id, leader_rx.clone(), Arc::clone(log)));
                (Some(identity), None, Some(trigger))
            }
        };
        let cluster = GatedCluster {
            gate: Arc::clone(&gate),
            inner: world.cluster.clone(),
        };
        let ec2 = GatedEc2 {
            gate: Arc::clone(&gate),
            inner: world.ec2.clone(),
        };
        spawn_controller(
            Arc::new(cluster),
            ec2,
            world.clock,
            WinipamProcess {
                seed: u64::from(id) ^ 0x9e37,
                readiness: readiness.clone(),
                settings: settings(),
            },
            leader_rx,
            async move {
                let _ = stop_rx.await;
            },
        );
        Process {
            gate,
            readiness,
            identity,
            leading,
            _stop: stop_tx,
            _leader: leader,
            _election: election,
        }
    }

    pub fn alive(&self) -> bool {
        self.gate.alive()
    }

    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }
}

/// Logs each verdict of process `id`'s elector at the virtual instant it was given (the
/// runtime is single-threaded with paused time: the task runs before time moves on).
async fn record(id: u32, mut leading: watch::Receiver<bool>, log: LeaderLog) {
    while leading.changed().await.is_ok() {
        let value = *leading.borrow_and_update();
        log.lock().unwrap_or_else(|e| e.into_inner()).push((
            tokio::time::Instant::now(),
            id,
            value,
        ));
    }
}
