//! One simulated winipam process: the production controller on its own gated views of the
//! shared cluster and EC2 (see `gate`), with a fresh EC2 client, metrics and readiness. A crash
//! shuts its gate; a restart is a brand-new process.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::gate::{Gate, GatedCluster, GatedEc2, Tally};
use super::world::ChaosWorld;
use crate::controller::Settings;
use crate::server::Readiness;
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

pub struct Process {
    pub gate: Arc<Gate>,
    pub readiness: Readiness,
    /// Kept while the process exists: dropping it would ask the controller to stop (a clean
    /// shutdown, which a crash is not).
    _stop: oneshot::Sender<()>,
    _leader: watch::Sender<bool>,
}

impl Process {
    /// Starts process `id`; it leads from the start (the only replica).
    pub fn start(id: u32, world: &ChaosWorld, tally: Arc<Tally>) -> Process {
        let gate = Gate::new(id, tally, world.clock);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (leader_tx, leader_rx) = watch::channel(true);
        let readiness = Readiness::default();
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
            _stop: stop_tx,
            _leader: leader_tx,
        }
    }

    pub fn alive(&self) -> bool {
        self.gate.alive()
    }
}
