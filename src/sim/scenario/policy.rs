//! The IPAM in charge during a run: the production controller, or the model of the VPC Resource
//! Controller. Both are started on the world's cluster and EC2 and stopped the same way; a
//! restart is a stop and a fresh start (new process: empty caches, nothing kept in memory).

use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::world::World;
use crate::clock::TokioClock;
use crate::controller::{Controller, Ctx, Settings};
use crate::ec2::{Ec2Backend, Ec2Client, Ec2ClientConfig};
use crate::k8s::Cluster;
use crate::metrics::Metrics;
use crate::server::Readiness;
use crate::sim::vpcrc::{VpcRcModel, VpcRcReady};

/// Namespace and name of winipam's ConfigMap in the simulated cluster.
pub const CONFIG_NAMESPACE: &str = "winipam-system";
pub const CONFIG_NAME: &str = "winipam";

/// Which IPAM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    Winipam,
    VpcRcModel,
}

impl PolicyKind {
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Winipam => "winipam",
            PolicyKind::VpcRcModel => "vpc-rc-model",
        }
    }
}

/// Whether the running IPAM has rebuilt its state (every node initialised).
enum Ready {
    Winipam(Readiness),
    VpcRc(VpcRcReady),
}

pub(super) struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    ready: Ready,
}

impl Running {
    /// Starts `kind` on the world. The configuration (prefix delegation) is already in the
    /// cluster's ConfigMaps.
    pub fn start(kind: PolicyKind, world: &World, seed: u64) -> Running {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stopped = async move {
            // A dropped sender also means stop.
            let _ = stop_rx.await;
        };
        match kind {
            PolicyKind::Winipam => {
                let readiness = Readiness::default();
                let task = start_winipam(world, seed, readiness.clone(), stopped);
                Running {
                    stop: Some(stop_tx),
                    task,
                    ready: Ready::Winipam(readiness),
                }
            }
            PolicyKind::VpcRcModel => {
                let model = VpcRcModel::new(world.cluster.clone(), world.ec2.clone(), seed);
                let ready = model.readiness();
                let task = tokio::spawn(model.run(stopped));
                Running {
                    stop: Some(stop_tx),
                    task,
                    ready: Ready::VpcRc(ready),
                }
            }
        }
    }

    /// Every node's pool is rebuilt (winipam: `/readyz` would answer OK).
    pub fn ready(&self) -> bool {
        match &self.ready {
            Ready::Winipam(r) => r.check().is_ok(),
            Ready::VpcRc(r) => r.all_nodes_ready(),
        }
    }

    /// Stops it and waits until it has (EC2 calls in flight finish first).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Err(err) = (&mut self.task).await {
            tracing::error!(error = %err, "IPAM task ended abnormally");
        }
    }
}

fn start_winipam(
    world: &World,
    seed: u64,
    readiness: Readiness,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    // As the lease elector does: not leading at first, then leading (readiness then waits for
    // every pool to be rebuilt). The only replica: it leads for its whole life.
    let (leader_tx, leader_rx) = watch::channel(false);
    let _ = leader_tx.send(true);
    let stopped = async move {
        stopped.await;
        drop(leader_tx);
    };
    spawn_on_world(world, seed, readiness, leader_rx, stopped)
}

/// One winipam process with the default settings on `world`'s cluster and EC2, led by
/// `leader`, until `stopped` resolves.
pub(super) fn spawn_on_world(
    world: &World,
    seed: u64,
    readiness: Readiness,
    leader: watch::Receiver<bool>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    spawn_controller(
        Arc::new(world.cluster.clone()),
        world.ec2.clone(),
        world.clock,
        WinipamProcess {
            seed,
            readiness,
            settings: Settings::default(),
        },
        leader,
        stopped,
    )
}

/// What makes one winipam process its own: the seed of its EC2 client's jitter, its readiness
/// and its loop settings.
pub(crate) struct WinipamProcess {
    pub seed: u64,
    pub readiness: Readiness,
    pub settings: Settings,
}

/// Starts one winipam process (fresh metrics, EC2 client and controller: nothing shared with an
/// earlier process) on `cluster` and `ec2`, led by `leader`, until `stopped` resolves.
pub(crate) fn spawn_controller<C: Cluster, B: Ec2Backend>(
    cluster: Arc<C>,
    ec2: B,
    clock: TokioClock,
    process: WinipamProcess,
    leader: watch::Receiver<bool>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(err) => {
            // A fresh registry cannot hold duplicates; this is a bug, not a condition.
            tracing::error!(error = %err, "metrics registry");
            return tokio::spawn(async {});
        }
    };
    let ec2 = match Ec2Client::new(
        ec2,
        Ec2ClientConfig {
            jitter_seed: process.seed,
            ..Ec2ClientConfig::default()
        },
        metrics.registry(),
    ) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "EC2 client metrics");
            return tokio::spawn(async {});
        }
    };
    let ctx = Arc::new(Ctx::new(
        cluster,
        ec2,
        Arc::new(clock),
        metrics,
        process.readiness,
        process.settings,
    ));
    tokio::spawn(async move {
        Controller::new(ctx, CONFIG_NAMESPACE, CONFIG_NAME)
            .run(leader, stopped)
            .await;
    })
}
